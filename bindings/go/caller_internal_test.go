package ffi

import "testing"

// TestDecodeCaller_ReadsTheHeadersObject checks the parse of hms_request_caller_json's object,
// with the host a gateway's caller carries (the gateway's tests bring real ones, in C++).
func TestDecodeCaller_ReadsTheHeadersObject(t *testing.T) {
	var c Caller
	decodeCaller(&c, `{"uid":1001,"gid":1001,"pid":4242,"groups":[1001,27],"name":"hms-api",`+
		`"authenticated":true,"subject":"alice","issuer":"hms-auth","roles":["doctor"]}`)
	if c.GID != 1001 || len(c.Groups) != 2 || !c.Authenticated || c.Subject != "alice" ||
		c.Issuer != "hms-auth" || !c.HasRole("doctor") || c.Host != "" {
		t.Fatalf("decoded %+v", c)
	}
	var remote Caller
	decodeCaller(&remote, `{"uid":1001,"pid":77,"name":"hms-api","roles":[],"host":"host-a"}`)
	if remote.Host != "host-a" || remote.Roles == nil || remote.Groups == nil {
		t.Fatalf("decoded %+v", remote)
	}
	var bad Caller
	decodeCaller(&bad, `not json`)
	if bad.Authenticated || bad.Host != "" || len(bad.Roles) != 0 {
		t.Fatalf("decoded %+v from text that is not JSON", bad)
	}
}
