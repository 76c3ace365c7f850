"""Generic Redis pieces: URL forms, the multiplexed connection, Redis's clock."""
