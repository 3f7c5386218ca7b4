//! Integration tests: the real `ferry` binary against temp spools.
