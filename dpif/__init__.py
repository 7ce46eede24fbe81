"""flowpath's shared datapath model: fields, matches, actions, flows, the Datapath interface.

Imports nothing of flowpath's own outside ``dpif``.
"""
