"""aeqprop: train physical systems by agnostic equilibrium propagation.

The core is device-independent: it talks to a substrate only through the
contract in :mod:`aeqprop.substrate` and finds backends, drivers and protocols
by name through :mod:`aeqprop.registry`.
"""

__version__ = "0.1.0"
