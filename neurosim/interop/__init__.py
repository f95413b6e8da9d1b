"""Spikes out of neurosim into the ecosystem's formats: Neo (``neo_io``) for analysis with
Elephant, NWB (``nwb_io``) for sharing. Both need the ``interop`` extra
(``pip install neurosim[interop]``)."""
