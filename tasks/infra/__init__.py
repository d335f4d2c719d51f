"""Infrastructure: the ledger, run directories, result records, errors, secrets,
processes, rate limiting, crash points, table I/O."""
