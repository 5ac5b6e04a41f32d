"""Telling people: routes, inhibition, silences, dedup, the outbox, and the notifiers.

The stages, one module each: ``routing`` (labels, routes, groups, inhibition, silences),
``dedup`` (whether a receiver needs to hear about a group), ``outbox`` (stored before
sent, retried with backoff, recorded after success) and ``pipeline`` (planning after a
tick, then draining). ``base`` is the notifier seam. Import from the modules themselves;
this package imports nothing, so the light parts stay light.
"""
