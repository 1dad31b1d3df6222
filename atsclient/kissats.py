"""For kissats task packs: their ``ats_client`` parameter names a module, and kissats
builds ``module.ATS_Client(**ats_client_args)``. Name this module and they get atsd."""

from .client import ATSClient as ATS_Client

__all__ = ["ATS_Client"]
