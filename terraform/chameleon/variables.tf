variable "cloud" {
  description = "Entry of clouds.yaml to use (download it from the Chameleon site, e.g. CHI@UC)."
  type        = string
  default     = "chameleon"
}

variable "name_prefix" {
  description = "Prefix of every resource name, so several clusters can share a project."
  type        = string
  default     = "facegate"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name_prefix))
    error_message = "name_prefix must be a lowercase DNS label of 2-21 characters."
  }
}

variable "skylake_reservation_id" {
  description = "Blazar reservation id (lease) for the compute_skylake control-plane node."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f-]{36}$", var.skylake_reservation_id))
    error_message = "skylake_reservation_id must be a Blazar reservation UUID."
  }
}

variable "gpu_reservation_id" {
  description = "Blazar reservation id (lease) for the gpu_v100 worker nodes."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f-]{36}$", var.gpu_reservation_id))
    error_message = "gpu_reservation_id must be a Blazar reservation UUID."
  }
}

variable "gpu_worker_count" {
  description = "Number of gpu_v100 workers (at most the hosts in the GPU reservation)."
  type        = number
  default     = 2

  validation {
    condition     = var.gpu_worker_count >= 0 && var.gpu_worker_count <= 8
    error_message = "gpu_worker_count must be between 0 and 8."
  }
}

variable "image_name" {
  description = "Node image for the control plane (Chameleon-supported Ubuntu)."
  type        = string
  default     = "CC-Ubuntu22.04"
}

variable "gpu_image_name" {
  description = "Node image for the GPU workers (Ansible installs the pinned NVIDIA driver itself)."
  type        = string
  default     = "CC-Ubuntu22.04"
}

variable "key_pair" {
  description = "Name of an existing OpenStack key pair for SSH (the private key never enters Terraform)."
  type        = string
}

variable "admin_cidrs" {
  description = "CIDRs allowed to SSH (22) and reach the Kubernetes API (6443): the operators' networks."
  type        = list(string)

  validation {
    condition     = length(var.admin_cidrs) > 0 && alltrue([for c in var.admin_cidrs : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "admin_cidrs must be non-empty, valid CIDRs, and never a /0: SSH and the API are not for the world."
  }
}

variable "kiosk_cidrs" {
  description = "CIDRs of the exam-centre kiosks, allowed to the ingress (HTTPS 443 only)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.kiosk_cidrs : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "kiosk_cidrs must be valid CIDRs and never a /0."
  }
}

variable "subnet_cidr" {
  description = "CIDR of the cluster's private subnet."
  type        = string
  default     = "10.56.0.0/24"
}

variable "pod_cidr" {
  description = "Pod network CIDR (kubeadm and the CNI); must not overlap subnet_cidr."
  type        = string
  default     = "10.244.0.0/16"
}

variable "external_network" {
  description = "Name of the provider network with floating IPs (public on Chameleon)."
  type        = string
  default     = "public"
}

variable "dns_nameservers" {
  description = "DNS servers of the private subnet."
  type        = list(string)
  default     = ["8.8.8.8", "8.8.4.4"]
}

variable "data_volume_size_gb" {
  description = "Size of the block volume for PostgreSQL and MinIO data on the control-plane node."
  type        = number
  default     = 500
}

variable "object_container" {
  description = "Swift/S3 container for datasets, bundles and MLflow artifacts (used when MinIO is off)."
  type        = string
  default     = "facegate"
}
