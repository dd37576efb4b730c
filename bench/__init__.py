"""Benchmarks behind ``make bench-*``: each prints ratios measured side by side and ends with one JSON line."""


def configure_runtime() -> None:
    """A bench's entry point: read the settings once and hand them to the runtime, so model loads use
    ``EXPLAINER_MODEL_CACHE`` as the ``explainer`` command does."""
    from explainer import runtime
    from explainer.settings import load_settings

    runtime.configure(load_settings())
