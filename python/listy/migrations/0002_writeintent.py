import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("listy", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="WriteIntent",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("model", models.CharField(max_length=200)),
                ("created", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "verbose_name": "cache write intent",
            },
        ),
    ]
