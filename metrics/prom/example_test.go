package pgcoordprom_test

import (
	"context"
	"log"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgcoord/pgcoord"
	pgcoordprom "github.com/pgcoord/pgcoord/metrics/prom"
)

// Register the collector of a coordinator and serve /metrics.
func Example() {
	c, err := pgcoord.New(pgcoord.Config{ConnString: os.Getenv("DATABASE_URL")})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer c.Stop(context.Background())

	reg := prometheus.NewRegistry()
	reg.MustRegister(pgcoordprom.New(c, pgcoordprom.WithConstLabels(prometheus.Labels{"service": "cinder-volume"})))
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	log.Fatal(http.ListenAndServe(":9090", nil))
}
