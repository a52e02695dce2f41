"""Tools for testing infercore and third-party backends: real models fetched from packages
(``infercore.testing.models``) and the backend conformance kit."""
