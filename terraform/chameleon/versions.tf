terraform {
  required_version = ">= 1.6.0"

  required_providers {
    openstack = {
      source  = "terraform-provider-openstack/openstack"
      version = "3.4.0"
    }
  }
}

# Credentials come from clouds.yaml / OS_* variables (Chameleon's openrc), never from this code.
provider "openstack" {
  cloud = var.cloud
}
