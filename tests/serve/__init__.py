"""Tests of ``infercore serve`` (REST, gRPC, repository, operations) on loopback."""
