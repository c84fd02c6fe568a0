"""The kuno client: keys, end-to-end encryption, the `kuno` command."""
