"""How a node finds and keeps its peers: hints from mDNS, static addresses and peer exchange.

* `txt`: the mDNS TXT record (`Advert`), encoded and decoded as hostile input. Pure.
* `peer_table`: the peer link state machine (`PeerTable`), fed hints, Describes and beats. Pure.
* `static`: `--peer HOST:PORT` and the `discovery:` config section.
* `mdns`: the async shell around python-zeroconf (`MdnsDiscovery`, the `Discovery` seam).
* `peering`: the links themselves: dial, verify with an mTLS `Describe`, watch beats, gossip.

Discovery only ever produces hints; a peer is trusted after an mTLS `Describe`.
May import: `orc.scheduler`, `orc.node.models`, `orc.node.protocol`, `orc.node.trust`, `orc.node.home`.
"""
