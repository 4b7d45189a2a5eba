# The admin API (config, stats, metrics) stays on loopback.
package weir

import rego.v1

admin_on_loopback(address) if startswith(address, "127.")

admin_on_loopback(address) if startswith(address, "[::1]:")

admin_on_loopback(address) if startswith(address, "localhost:")

deny contains msg if {
	not admin_on_loopback(input.config.admin.address)
	msg := sprintf("the admin address %s is not loopback", [input.config.admin.address])
}
