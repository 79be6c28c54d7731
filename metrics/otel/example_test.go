package pgcoordotel_test

import (
	"context"
	"log"
	"os"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"

	"github.com/pgcoord/pgcoord"
	pgcoordotel "github.com/pgcoord/pgcoord/metrics/otel"
)

// Report a coordinator's metrics through the global MeterProvider (set up
// with the SDK and an exporter elsewhere).
func Example() {
	c, err := pgcoord.New(pgcoord.Config{ConnString: os.Getenv("DATABASE_URL")})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer c.Stop(context.Background())

	m, err := pgcoordotel.Register(c, otel.Meter("github.com/pgcoord/pgcoord"),
		pgcoordotel.WithAttributes(attribute.String("service", "cinder-volume")))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Unregister()
	// ... take locks ...
}
