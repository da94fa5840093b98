"""roomlog's native forwarding core (C + libsrtp2 through cffi): see native/README.md."""
