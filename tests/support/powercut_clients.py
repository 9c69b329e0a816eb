"""Moved to stig_testkit.powercut_clients; this shim goes once every test imports the new path."""

from stig_testkit.powercut_clients import *  # noqa: F403
from stig_testkit.powercut_clients import CLIENTS, BinaryClient, Client, MetaClient, TextClient  # noqa: F401
