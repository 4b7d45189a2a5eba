# Every upstream has at least `min_endpoints` endpoints. weir itself refuses an upstream with
# none; raise the number for redundancy (2: one endpoint can restart without an outage).
package weir

import rego.v1

min_endpoints := 1

deny contains msg if {
	some u in input.config.upstreams
	count(u.endpoints) < min_endpoints
	msg := sprintf("upstream %s has %d endpoint(s), fewer than %d", [u.name, count(u.endpoints), min_endpoints])
}
