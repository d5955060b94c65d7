// Package virtapi plays KubeVirt's virt-api for the volume hotplug subresources, served for real
// through the management kube-apiserver's aggregation layer: APIService
// v1.subresources.kubevirt.io → Service kubevirt/virt-api (type ExternalName "localhost") →
// this package's TLS server on 127.0.0.1.
//
// Requests arrive the way they do at the real virt-api: proxied by kube-apiserver with its
// front-proxy client certificate and the caller's identity in X-Remote-* headers. The server
// trusts only what the apiserver publishes in kube-system/extension-apiserver-authentication,
// and authorizes every subresource call with a SubjectAccessReview, as upstream does.
//
// See NOTES.md for what is simulated, how faithfully, and what is not.
package virtapi
