// Package ca is Weft's SPIFFE certificate authority (Istio's Citadel role).
//
// It keeps a self-signed root under the control plane's data directory (or
// loads a user-supplied intermediate from an Istio-style cacerts directory),
// signs workload CSRs with exactly one SPIFFE URI SAN for the identity that
// the caller proved, serves Istio's IstioCertificateService over gRPC, and
// authenticates embedded-mode callers with per-service-account join tokens.
package ca

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultTrustDomain is used when Options.TrustDomain is empty.
const DefaultTrustDomain = "cluster.local"

// ErrInvalidIdentity reports a namespace or service account that cannot be
// part of a SPIFFE ID.
var ErrInvalidIdentity = errors.New("invalid workload identity")

// Identity is a workload identity: a Kubernetes-style namespace and service
// account.
type Identity struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
}

// String renders "ns/sa".
func (i Identity) String() string { return i.Namespace + "/" + i.ServiceAccount }

// dns1123Label matches a Kubernetes namespace name.
var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// dns1123Subdomain matches a Kubernetes service account name.
var dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// Validate checks both parts against Kubernetes naming rules (DNS-1123 label
// for the namespace, DNS-1123 subdomain for the service account).
func (i Identity) Validate() error {
	if len(i.Namespace) == 0 || len(i.Namespace) > 63 || !dns1123Label.MatchString(i.Namespace) {
		return fmt.Errorf("%w: namespace %q must be a DNS-1123 label (lowercase letters, digits, '-')", ErrInvalidIdentity, i.Namespace)
	}
	if len(i.ServiceAccount) == 0 || len(i.ServiceAccount) > 253 || !dns1123Subdomain.MatchString(i.ServiceAccount) {
		return fmt.Errorf("%w: service account %q must be a DNS-1123 subdomain (lowercase letters, digits, '-', '.')", ErrInvalidIdentity, i.ServiceAccount)
	}
	return nil
}

// SPIFFEID builds spiffe://<trustDomain>/ns/<ns>/sa/<sa>.
func SPIFFEID(trustDomain string, id Identity) (spiffeid.ID, error) {
	if err := id.Validate(); err != nil {
		return spiffeid.ID{}, err
	}
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("trust domain %q: %w", trustDomain, err)
	}
	sid, err := spiffeid.FromSegments(td, "ns", id.Namespace, "sa", id.ServiceAccount)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %w", ErrInvalidIdentity, err)
	}
	return sid, nil
}

// ParseSPIFFEID is the inverse of SPIFFEID: it returns the trust domain and
// identity of a spiffe://td/ns/NS/sa/SA URI.
func ParseSPIFFEID(s string) (string, Identity, error) {
	sid, err := spiffeid.FromString(s)
	if err != nil {
		return "", Identity{}, fmt.Errorf("%w: %w", ErrInvalidIdentity, err)
	}
	parts := strings.Split(sid.Path(), "/")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "ns" || parts[3] != "sa" {
		return "", Identity{}, fmt.Errorf("%w: %q is not of the form spiffe://<td>/ns/<ns>/sa/<sa>", ErrInvalidIdentity, s)
	}
	ns, sa := parts[2], parts[4]
	id := Identity{Namespace: ns, ServiceAccount: sa}
	if err := id.Validate(); err != nil {
		return "", Identity{}, err
	}
	return sid.TrustDomain().Name(), id, nil
}
