"""OCI distribution client: auth (sans-IO), endpoints and mirrors, HTTP transfers, the pull pipeline."""
