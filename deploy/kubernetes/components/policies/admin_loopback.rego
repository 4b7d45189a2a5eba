# The admin API stays on loopback unless it has a bearer token (admin.token_file or
# admin.token_env): with one, it may bind a pod address, where the kubelet's probes and
# Prometheus reach it, and its state-changing calls (POST /reload) need the token.
# Set `admin.reads: token` to close the reads too (/healthz and /readyz stay open).
package weir

import rego.v1

admin_on_loopback(address) if startswith(address, "127.")

admin_on_loopback(address) if startswith(address, "[::1]:")

admin_on_loopback(address) if startswith(address, "localhost:")

admin_has_token if object.get(input.config.admin, "token_file", null) != null

admin_has_token if object.get(input.config.admin, "token_env", null) != null

deny contains msg if {
	not admin_on_loopback(input.config.admin.address)
	not admin_has_token
	msg := sprintf("the admin address %s is not loopback and the admin API has no token (set admin.token_file or admin.token_env)", [input.config.admin.address])
}
