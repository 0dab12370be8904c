"""Local TLS material for test brokers and OPC-UA peers: the kernel's small CA
(``aquavolt.pki``), which deployment setup (``aquavolt security init``) uses too."""

from aquavolt.pki import CertFiles, make_ca, make_cert

__all__ = ["CertFiles", "make_ca", "make_cert"]
