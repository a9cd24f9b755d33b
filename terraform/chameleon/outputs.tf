output "ansible_inventory" {
  description = "Ansible inventory YAML: terraform output -raw ansible_inventory > ../../ansible/inventory/chameleon.yml"
  value       = module.inventory.inventory
}

output "control_plane_ip" {
  description = "Floating IP of the control plane: Kubernetes API (admin CIDRs) and the kiosk ingress (443)."
  value       = openstack_networking_floatingip_v2.control_plane.address
}

output "object_container" {
  description = "Object-storage container for datasets, bundles and MLflow artifacts."
  value       = openstack_objectstorage_container_v1.artifacts.name
}
