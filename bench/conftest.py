"""pytest-benchmark configuration of the fastloss benchmark suite (see README.md here)."""

from __future__ import annotations


def pytest_report_header(config):
    from fastloss.bench.core import backend_facts, cpu_model, usable_cores

    f = backend_facts()
    return [f"fastloss {f['fastloss']}: backend {f['backend']}, SIMD {f['simd']}, "
            f"OpenMP {f['openmp']}, {f['default_threads']} threads; "
            f"CPU {cpu_model()}, {usable_cores()} usable cores"]


def pytest_benchmark_update_machine_info(config, machine_info):
    """Put what fastloss runs with into the machine_info of --benchmark-json/--benchmark-save."""
    from fastloss.bench.core import backend_facts, cpu_model, usable_cores

    machine_info["fastloss"] = backend_facts()
    machine_info["cpu_model"] = cpu_model()
    machine_info["usable_cores"] = usable_cores()
