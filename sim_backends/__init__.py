"""Simulated substrates, each satisfying :class:`aeqprop.substrate.Substrate`."""
