CREATE TABLE "restores" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"workspace_id" uuid NOT NULL,
	"backup_id" uuid NOT NULL,
	"target_server_id" uuid NOT NULL,
	"source_database" text,
	"target_database" text,
	"target_path" text,
	"replace_existing" boolean DEFAULT false NOT NULL,
	"parts" jsonb NOT NULL,
	"connection" jsonb,
	"connection_secret_enc" text,
	"timeout_seconds" integer NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"error" jsonb,
	"progress" jsonb,
	"details" jsonb,
	"cancel_requested_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "restores" ADD CONSTRAINT "restores_workspace_id_workspaces_id_fk" FOREIGN KEY ("workspace_id") REFERENCES "public"."workspaces"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "restores" ADD CONSTRAINT "restores_backup_id_backups_id_fk" FOREIGN KEY ("backup_id") REFERENCES "public"."backups"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "restores" ADD CONSTRAINT "restores_target_server_id_servers_id_fk" FOREIGN KEY ("target_server_id") REFERENCES "public"."servers"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "restores_backup_idx" ON "restores" USING btree ("backup_id","created_at");--> statement-breakpoint
CREATE INDEX "restores_server_status_idx" ON "restores" USING btree ("target_server_id","status");--> statement-breakpoint
CREATE INDEX "restores_workspace_created_idx" ON "restores" USING btree ("workspace_id","created_at");--> statement-breakpoint
CREATE INDEX "restores_open_idx" ON "restores" USING btree ("status") WHERE status in ('pending', 'in_progress');