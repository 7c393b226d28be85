DROP INDEX "servers_workspace_idx";--> statement-breakpoint
CREATE INDEX "servers_workspace_created_idx" ON "servers" USING btree ("workspace_id","created_at" DESC NULLS LAST,"id" DESC NULLS LAST);