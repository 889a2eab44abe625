"""Pure market-data logic: the reference securities, tick validation, historical replay plans."""
