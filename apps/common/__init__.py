"""Code the kuno services share: CouchDB client, tokens, configuration, web plumbing."""
