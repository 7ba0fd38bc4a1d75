"""acar: an offline, cache-first pipeline for AVA-style action localization.

One module per stage (``synth``, ``detect``, ``extract``, ``bank``, ``train``,
``evaluate``); artifact formats live in :mod:`pipeline.artifacts`; heads in
:mod:`pipeline.models`.
"""
