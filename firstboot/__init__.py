"""First boot inside the appliance images: the seed ISO becomes a configured node."""
