"""Build highly available LVS web cluster appliances from a cluster profile."""
