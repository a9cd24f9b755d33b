# Renders the Ansible inventory for the cluster from the nodes Terraform created. Provider-free on purpose: it is
# pure data transformation, so `terraform test` can cover it without the OpenStack provider.

terraform {
  required_version = ">= 1.6.0"
}

variable "control_plane" {
  description = "The kubeadm control-plane node (also the CPU serving pool)."
  type = object({
    name       = string
    public_ip  = string
    private_ip = string
  })

  validation {
    condition     = can(cidrhost("${var.control_plane.private_ip}/32", 0)) && can(cidrhost("${var.control_plane.public_ip}/32", 0))
    error_message = "control_plane.public_ip and private_ip must be IPv4 addresses."
  }
}

variable "gpu_workers" {
  description = "V100 worker nodes, in the order they were created."
  type = list(object({
    name       = string
    public_ip  = string
    private_ip = string
  }))
  default = []

  validation {
    condition     = alltrue([for w in var.gpu_workers : can(cidrhost("${w.private_ip}/32", 0))])
    error_message = "Every gpu_workers[*].private_ip must be an IPv4 address."
  }

  validation {
    condition     = length(distinct([for w in var.gpu_workers : w.name])) == length(var.gpu_workers)
    error_message = "gpu_workers names must be unique (they become Kubernetes node names)."
  }
}

variable "ssh_user" {
  description = "Login user of the node images (Chameleon's CC images use cc)."
  type        = string
  default     = "cc"
}

variable "pod_cidr" {
  description = "Pod network CIDR handed to kubeadm and the CNI."
  type        = string
  default     = "10.244.0.0/16"
}

variable "extra_vars" {
  description = "More group variables for all hosts (for example the object-storage container name)."
  type        = map(string)
  default     = {}
}

locals {
  host = { for n in concat([var.control_plane], var.gpu_workers) : n.name => {
    ansible_host = n.public_ip
    private_ip   = n.private_ip
  } }

  inventory = {
    all = {
      vars = merge(var.extra_vars, {
        ansible_user          = var.ssh_user
        pod_cidr              = var.pod_cidr
        control_plane_address = var.control_plane.private_ip
      })
      children = {
        control_plane = {
          hosts = { (var.control_plane.name) = merge(local.host[var.control_plane.name], { node_pool = "cpu" }) }
        }
        gpu_workers = {
          hosts = { for w in var.gpu_workers : w.name => merge(local.host[w.name], { node_pool = "gpu-v100" }) }
        }
      }
    }
  }
}

output "inventory" {
  description = "Ansible inventory (YAML): groups control_plane and gpu_workers; node_pool becomes the node label."
  value       = yamlencode(local.inventory)
}

output "hosts" {
  description = "Node name to address map, for scripts."
  value       = local.host
}
