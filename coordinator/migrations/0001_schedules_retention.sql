CREATE TABLE "coordinator_replicas" (
	"id" text PRIMARY KEY NOT NULL,
	"hostname" text NOT NULL,
	"pid" integer NOT NULL,
	"started_at" timestamp with time zone NOT NULL,
	"seen_at" timestamp with time zone NOT NULL,
	"stopped_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "leases" (
	"name" text PRIMARY KEY NOT NULL,
	"holder" text NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "expired_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "backups" ADD COLUMN "deletion" jsonb;--> statement-breakpoint
ALTER TABLE "plans" ADD COLUMN "keep_daily" integer;--> statement-breakpoint
ALTER TABLE "plans" ADD COLUMN "keep_weekly" integer;--> statement-breakpoint
ALTER TABLE "plans" ADD COLUMN "keep_monthly" integer;--> statement-breakpoint
ALTER TABLE "plans" ADD COLUMN "keep_yearly" integer;--> statement-breakpoint
ALTER TABLE "servers" ADD COLUMN "connected_replica" text;--> statement-breakpoint
CREATE INDEX "backups_retention_idx" ON "backups" USING btree ("expires_at") WHERE status = 'completed' and deletion is null;--> statement-breakpoint
CREATE INDEX "backups_deleting_idx" ON "backups" USING btree ("plan_id") WHERE deletion is not null and expired_at is null;