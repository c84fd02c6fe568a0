"""The standard (storage) node: keeps encrypted messages for offline recipients."""
