# A listener on anything but loopback serves TLS.
package weir

import rego.v1

listener_on_loopback(address) if startswith(address, "127.")

listener_on_loopback(address) if startswith(address, "[::1]:")

listener_on_loopback(address) if startswith(address, "localhost:")

deny contains msg if {
	some l in input.config.listeners
	not listener_on_loopback(l.address)
	object.get(l, "tls", null) == null
	msg := sprintf("listener %s on %s is reachable from the network and has no tls", [l.name, l.address])
}
