"""The OpenFaaS image hook: a faas-provider proxy that pulls every deploy through the NIC cache."""
