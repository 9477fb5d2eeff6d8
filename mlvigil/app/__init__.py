"""The application: the service that assembles the capability packages, its API, CLI and
console, and the demo (docs/architecture.md)."""
