"""Image bytes: format sniffing, decoding, hashing and conversion, in a process pool."""
