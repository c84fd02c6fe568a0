"""kuno's message storage tier: the master, the standard storage nodes and the client."""
