"""How a node finds its peers: hints from mDNS, static addresses and peer exchange.

* `txt`: the mDNS TXT record (`Advert`), encoded and decoded as hostile input. Pure.
* `peers`: the peer link state machine (`PeerTable`), fed hints, Describes and beats. Pure.
* `static`: `--peer HOST:PORT` and the `discovery:` config section.
* `mdns`: the async shell around python-zeroconf (`MdnsDiscovery`, the `Discovery` seam).

Discovery only ever produces hints; a peer is trusted after an mTLS `Describe`.
"""
