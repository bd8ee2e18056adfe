"""End-to-end tests of the data plane (`meshplane._core`) through real sockets."""
