"""The apply side of the stream: row changes in batches, folded, applied with their
positions and versions in one transaction per batch, on lanes; dead letters."""
