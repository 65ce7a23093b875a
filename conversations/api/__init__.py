"""The JSON API: token auth, the live JSON socket, and the HTTP calls (docs/api.md)."""
