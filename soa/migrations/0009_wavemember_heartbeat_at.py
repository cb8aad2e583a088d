from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("soa", "0008_mailbox_department_indexes")]

    operations = [
        migrations.AddField(
            model_name="wavemember",
            name="heartbeat_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
