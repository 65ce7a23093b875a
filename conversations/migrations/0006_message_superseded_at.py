from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0005_api_tokens_tool_approval"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="superseded_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When an edit or a regenerated answer replaced it; kept, but no longer "
                "part of the conversation.",
                null=True,
            ),
        ),
    ]
