package admin

import (
	"crypto/x509"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// certDetail is one certificate in Envoy's /certs JSON shape.
type certDetail struct {
	Path                string    `json:"path"`
	SerialNumber        string    `json:"serial_number"`
	SubjectAltNames     []sanJSON `json:"subject_alt_names,omitempty"`
	DaysUntilExpiration string    `json:"days_until_expiration"`
	ValidFrom           string    `json:"valid_from"`
	ExpirationTime      string    `json:"expiration_time"`
}

type sanJSON struct {
	URI string `json:"uri,omitempty"`
	DNS string `json:"dns,omitempty"`
}

// certsJSON is the /certs document: {"certificates":[{"cert_chain":[...]}]}.
type certsJSON struct {
	Certificates []struct {
		CertChain []certDetail `json:"cert_chain"`
	} `json:"certificates"`
}

func (h *Handlers) certs(w http.ResponseWriter, _ *http.Request) {
	doc := certsJSON{Certificates: []struct {
		CertChain []certDetail `json:"cert_chain"`
	}{}}
	var chain []*x509.Certificate
	if h.Certs != nil {
		chain = h.Certs()
	}
	if len(chain) > 0 {
		var details []certDetail
		now := time.Now()
		for _, c := range chain {
			d := certDetail{
				Path:                "default",
				SerialNumber:        c.SerialNumber.Text(16),
				DaysUntilExpiration: strconv.Itoa(int(c.NotAfter.Sub(now).Hours() / 24)),
				ValidFrom:           c.NotBefore.UTC().Format(time.RFC3339),
				ExpirationTime:      c.NotAfter.UTC().Format(time.RFC3339),
			}
			for _, u := range c.URIs {
				d.SubjectAltNames = append(d.SubjectAltNames, sanJSON{URI: u.String()})
			}
			for _, n := range c.DNSNames {
				d.SubjectAltNames = append(d.SubjectAltNames, sanJSON{DNS: n})
			}
			details = append(details, d)
		}
		doc.Certificates = append(doc.Certificates, struct {
			CertChain []certDetail `json:"cert_chain"`
		}{details})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(doc)
}
