"""Dead letters as a queue: what ``<topic>.dlq`` holds, one letter, and redrive."""
