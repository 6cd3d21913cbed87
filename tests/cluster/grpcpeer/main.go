// Command grpc-peer is a gRPC server and client for the end-to-end tests, made of grpc-go's own packages (the
// standard health service, no generated code of ours): `grpc-peer serve :50051` answers grpc.health.v1.Health/Check
// and echoes the `authorization` metadata it received in a trailer; `grpc-peer call ADDR` makes that call over h2c
// (as an app talks to its ambassador) and prints one JSON object with what the client saw.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	if len(os.Args) != 3 || (os.Args[1] != "serve" && os.Args[1] != "call") {
		fmt.Fprintln(os.Stderr, "usage: grpc-peer serve LISTEN | grpc-peer call ADDR")
		os.Exit(2)
	}
	if os.Args[1] == "serve" {
		serve(os.Args[2])
	} else {
		call(os.Args[2])
	}
}

// seenAuthorization passes the call on and sends back, as trailing metadata, the authorization it arrived with.
func seenAuthorization(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	seen := "<none>"
	if values := md.Get("authorization"); len(values) > 0 {
		seen = values[0]
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-seen-authorization", seen))
	return handler(ctx, req)
}

func serve(listen string) {
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := grpc.NewServer(grpc.UnaryInterceptor(seenAuthorization))
	healthpb.RegisterHealthServer(server, health.NewServer())
	fmt.Println("serving on", lis.Addr())
	if err := server.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func call(addr string) {
	out := map[string]any{}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var trailer metadata.MD
	reply, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Trailer(&trailer))
	out["code"] = status.Code(err).String()
	if err != nil {
		out["message"] = status.Convert(err).Message()
	} else {
		out["serving"] = reply.GetStatus().String()
	}
	if values := trailer.Get("x-seen-authorization"); len(values) > 0 {
		out["seen_authorization"] = values[0]
	}
	// A service that does not exist: the server's NOT_FOUND must reach the app as it was sent.
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	out["unknown_service_code"] = status.Code(err).String()
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
