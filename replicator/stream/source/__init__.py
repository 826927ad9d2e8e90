"""The source side of the stream: poll the topic, position partitions where the
target says, know the topic and its ends, decode messages into ``ChangeEvent``."""
