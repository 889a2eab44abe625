"""Pure audit logic: the hash chain over the record and the facts a record derives from its event."""
