package ca

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	securityv1 "istio.io/api/security/v1alpha1"
)

// ImpersonatedIdentityKey is the IstioCertificateRequest.Metadata field in
// which Istio callers name the identity they ask for. Weft never grants a
// different identity than the one the credential proves.
const ImpersonatedIdentityKey = "ImpersonatedIdentity"

// RegisterGRPC serves istio.v1.auth.IstioCertificateService/CreateCertificate
// on s, issuing certificates from c for the identity auth proves from the
// caller's "authorization: Bearer <token>" metadata.
func RegisterGRPC(s *grpc.Server, c *CA, auth Authenticator) {
	securityv1.RegisterIstioCertificateServiceServer(s, &service{ca: c, auth: auth, log: c.log})
}

type service struct {
	securityv1.UnimplementedIstioCertificateServiceServer
	ca   *CA
	auth Authenticator
	log  *slog.Logger
}

func (s *service) CreateCertificate(ctx context.Context, req *securityv1.IstioCertificateRequest) (*securityv1.IstioCertificateResponse, error) {
	tok, err := bearer(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	id, err := s.auth.Authenticate(ctx, tok)
	if err != nil {
		s.log.Info("CSR rejected: authentication failed", "err", err)
		return nil, status.Errorf(codes.Unauthenticated, "authenticate caller: %v", err)
	}
	if want := requestedIdentity(req); want != "" {
		td, asked, err := ParseSPIFFEID(want)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %v", ImpersonatedIdentityKey, err)
		}
		if td != s.ca.TrustDomain() || asked != id {
			s.log.Warn("CSR rejected: identity mismatch", "caller", id.String(), "requested", want)
			return nil, status.Errorf(codes.PermissionDenied, "caller %s may not obtain a certificate for %s", id, want)
		}
	}
	ttl := time.Duration(req.GetValidityDuration()) * time.Second
	chain, err := s.ca.Sign([]byte(req.GetCsr()), id, ttl)
	if err != nil {
		if errors.Is(err, ErrBadCSR) {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		return nil, status.Errorf(codes.Internal, "sign: %v", err)
	}
	return &securityv1.IstioCertificateResponse{CertChain: chain}, nil
}

func requestedIdentity(req *securityv1.IstioCertificateRequest) string {
	f := req.GetMetadata().GetFields()
	if f == nil {
		return ""
	}
	return f[ImpersonatedIdentityKey].GetStringValue()
}

func bearer(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return "", errors.New("missing authorization metadata")
	}
	v := vals[0]
	const p = "bearer "
	if len(v) <= len(p) || !strings.EqualFold(v[:len(p)], p) {
		return "", errors.New("authorization metadata is not a Bearer token")
	}
	return strings.TrimSpace(v[len(p):]), nil
}
