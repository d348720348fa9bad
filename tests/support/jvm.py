"""JVM options for the tests' own Java processes: the brokers (through KAFKA_JVM_PERFORMANCE_OPTS, which the
Kafka scripts honour), the test EHR, the profile validator and its Maven build.

The client compiler only and the serial collector: a broker is ready on about half the CPU (3.4 against 6.2 s
here) and idles a little cheaper, and the test EHR loads the US Core packages on 18 CPU-s against 32. The tests
never run a JVM long enough for the optimising compiler to pay off. `make run` keeps Kafka's own defaults.
"""
from __future__ import annotations

import os

QUICK = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")


def quick_by_default() -> None:
    """Every Java process the tests start, directly or through a script, gets QUICK unless the caller set the
    variables already."""
    os.environ.setdefault("KAFKA_JVM_PERFORMANCE_OPTS", " ".join(QUICK))
    os.environ.setdefault("MAVEN_OPTS", " ".join(QUICK))
